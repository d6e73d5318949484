"""The policy gate: Rego rules over Pulumi plans, evaluated by a real OPA server.

`normalize` turns `pulumi preview --json` and `pulumi stack export` documents (and the
resources a Pulumi policy pack sees) into the one input shape the rules read; `opa`
runs and queries the server; `report` renders findings as text, JSON or SARIF.
"""
