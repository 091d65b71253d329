"""The `salesflow` command: the verbs, and the ones that span stages (status, demo).

It sits above every stage (producers, stream_app, mart_builder) and the shared core
(`salesflow`), which never import it.
"""
