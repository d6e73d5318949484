"""Input drift of a served model: its live input shares against its training profile, read from Prometheus.

`scores` holds the statistics (pure), `source` the PromQL reading, `report` the table, JSON and PNG, and
`command` the `servectl drift` command group, which only parses options and prints.
"""
