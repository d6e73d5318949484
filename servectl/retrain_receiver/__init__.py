"""The retraining trigger: an Alertmanager webhook receiver that runs `servectl retrain` (issue 15 point 4).

`alerts` turns a webhook payload into retrain requests (pure), `config` reads the per-model settings,
`runner` runs the command one at a time per model, `server` is the HTTP endpoint and `command` the
`servectl retrain-receiver` command, which only parses options and serves.
"""
