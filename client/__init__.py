"""Python side of the C-RADIOv4 sidecar: gRPC client, sidecar process lifecycle, option checks.

Knows nothing about models: it validates options, moves batches and owns the sidecar process.
"""
