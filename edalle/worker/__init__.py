"""The worker process: claims jobs from the queue, runs them on the engine, reports progress and results.

`edalle.worker.main` is the process loop (`run_worker`, `add_worker_arguments` for `edalle worker`),
`edalle.worker.runners` the seam to the engine (one runner per job kind), and `edalle.worker.results`
where the files go. Importing this package does not load any model.
"""
