"""The master's Kubernetes executor: per-run objects (an Indexed Job, a headless Service, a token
Secret) built as plain dicts, a small API client over httpx, and the executor that creates,
watches and deletes them (docs/deploy.md#kubernetes-the-executor, CLUSTERS.md §1.2)."""
