"""The operator's view: the admin use cases (`AdminService`), and the admin listener that serves
them as a web console, a JSON API and Prometheus metrics, apart from the public API."""
