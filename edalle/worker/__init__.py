"""The worker process: claims jobs from the queue, runs them through the operations on the engine, reports
progress and results.

`edalle.worker.main` is the process loop (`run_worker`, `add_worker_arguments` for `edalle worker`) and
`edalle.worker.runners` the seam to the operations (one runner per job kind). Where the files go is
`edalle.outputs.RunFolder`. Importing this package does not load any model.
"""
