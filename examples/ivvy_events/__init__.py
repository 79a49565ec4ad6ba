"""A small stand-in for the iVvy API's `contact` and `event` namespaces, built on batchgate.

    batchgate serve --app examples.ivvy_events.app:app

Its data lives in its own SQLite file, `IVVY_EVENTS_DB` (default `./ivvy_events.db`).
See docs/actions.md for a walkthrough.
"""
