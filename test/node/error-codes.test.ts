/** The pipeline's failure kinds → the wire's codes (transport/grpc/codes.ts), with no server. */
import assert from "node:assert/strict";
import { describe, it } from "node:test";

import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";

import { FAILURE_KINDS, REQUEST_ERROR_KINDS, type FailureKind, type RequestErrorKind } from "../../server/src/pipeline/errors.js";
import { INPUT_ERROR_KINDS, InputError } from "../../server/src/preprocess/errors.js";
import { ERROR_CODES, protoError, REQUEST_STATUS } from "../../server/src/transport/grpc/codes.js";
import { LOADER_OPTIONS, RADIO_PROTO } from "../../server/src/transport/grpc/proto.js";

// Written out again on purpose: a kind mapped to another code than before fails here, not in a client.
const EXPECTED_CODES: Record<FailureKind, string> = {
  file_not_found: "NOT_FOUND",
  file_unreadable: "NOT_FOUND",
  not_a_file: "NOT_A_FILE",
  outside_allowed_roots: "OUTSIDE_ALLOWED_ROOTS",
  unsupported_format: "UNSUPPORTED_FORMAT",
  corrupt_image: "CORRUPT_IMAGE",
  too_large: "TOO_LARGE",
  invalid_input: "INVALID_ARGUMENT",
  paths_refused: "PERMISSION_DENIED",
  invalid_prompt: "INVALID_ARGUMENT",
  internal: "INTERNAL",
};

const EXPECTED_STATUS: Record<RequestErrorKind, grpc.status> = {
  invalid_request: grpc.status.INVALID_ARGUMENT,
  queue_full: grpc.status.RESOURCE_EXHAUSTED,
  shutting_down: grpc.status.UNAVAILABLE,
};

/** radio.v1.ErrorCode's value names, from the .proto itself. */
function protoErrorCodes(): string[] {
  const pkg = protoLoader.loadSync(RADIO_PROTO, LOADER_OPTIONS);
  const def = pkg["radio.v1.ErrorCode"] as protoLoader.EnumTypeDefinition | undefined;
  assert.ok(def, "radio.proto defines radio.v1.ErrorCode");
  return (def.type as { value: { name: string }[] }).value.map((v) => v.name);
}

describe("failure kinds → radio.v1.ErrorCode", () => {
  it("the pipeline's kinds hold every input kind once", () => {
    for (const kind of INPUT_ERROR_KINDS) assert.ok((FAILURE_KINDS as readonly string[]).includes(kind), kind);
    assert.equal(new Set(FAILURE_KINDS).size, FAILURE_KINDS.length, "no kind twice");
  });

  it("maps every kind, and only kinds, to its code", () => {
    assert.deepEqual(Object.keys(ERROR_CODES).sort(), [...FAILURE_KINDS].sort());
    for (const kind of FAILURE_KINDS) assert.equal(ERROR_CODES[kind], EXPECTED_CODES[kind], kind);
  });

  it("every code is one of the proto's, never UNSPECIFIED", () => {
    const names = protoErrorCodes();
    for (const kind of FAILURE_KINDS) {
      assert.ok(names.includes(ERROR_CODES[kind]), `${kind} → ${ERROR_CODES[kind]} is not in radio.v1.ErrorCode`);
      assert.notEqual(ERROR_CODES[kind], "ERROR_CODE_UNSPECIFIED", kind);
    }
  });

  it("an input error's message ends with its wire code, as it always has; others are as given", () => {
    const err = new InputError("unsupported_format", "a.bmp", "not a supported image (BMP)");
    assert.deepEqual(protoError({ kind: err.kind, message: err.message }), {
      code: "UNSUPPORTED_FORMAT",
      message: 'input "a.bmp": not a supported image (BMP) [UNSUPPORTED_FORMAT]',
    });
    assert.deepEqual(protoError({ kind: "paths_refused", message: 'input "p": refused' }), {
      code: "PERMISSION_DENIED",
      message: 'input "p": refused [PERMISSION_DENIED]',
    });
    assert.deepEqual(protoError({ kind: "internal", message: 'input "x": inference failed: boom' }), {
      code: "INTERNAL",
      message: 'input "x": inference failed: boom',
    });
    assert.deepEqual(protoError({ kind: "invalid_prompt", message: "prompt 1: too long" }), { code: "INVALID_ARGUMENT", message: "prompt 1: too long" });
  });
});

describe("request error kinds → grpc.status", () => {
  it("maps every kind, and only kinds, to its status", () => {
    assert.deepEqual(Object.keys(REQUEST_STATUS).sort(), [...REQUEST_ERROR_KINDS].sort());
    for (const kind of REQUEST_ERROR_KINDS) assert.equal(REQUEST_STATUS[kind], EXPECTED_STATUS[kind], kind);
  });
});
