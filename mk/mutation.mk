# Mutation testing (issue 18): mutmut mutates each core module declared in tests/mutation/modules.toml,
# runs the tests that cover it, prints the score table and fails when a module is under its threshold.
# Kept out of `make test`: the whole list takes tens of minutes on this machine (docs/mutation.md).
# One module, or a few:  make mutation MODULES="serving_image/variants.py loadtests/slo.py"
# Every surviving mutant as well:  make mutation MUTATION_ARGS=--show-survivors
MODULES ?=
MUTATION_ARGS ?=

.PHONY: mutation

mutation: setup
	$(BIN)/python -m tests.mutation.run $(foreach m,$(MODULES),--module $(m)) $(MUTATION_ARGS)
