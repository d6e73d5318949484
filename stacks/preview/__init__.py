"""The offline plan: the real program under Pulumi's mocks, written as `pulumi preview --json` writes it."""
