# Asynchronous inference (issue 16, docs/async-inference.md): the job queue is a Redis Stream. The tests
# start Debian's redis-server themselves on a free loopback port (tests/serving_image/redis_fixture.py),
# so `make test` needs the package on a fresh machine; the stacks use an ElastiCache replication group.
APT_PACKAGES += redis-server
