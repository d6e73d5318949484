#!/usr/bin/env bash
# Push one image tarball (the images job's `docker save`, images.yml) to a repository of the stack's ECR under
# its source tag, and prove it landed under the digest the images job recorded. Used by stack.yml's and
# smb.yml's infra jobs after they have logged crane in to the registry.
#   push-image.sh TARBALL IMAGE TAG DIGEST
# The repositories' tags are immutable: an image already under TAG must be DIGEST (the one the stack was
# planned with), and is kept; otherwise the tarball is pushed and must come back as IMAGE@DIGEST.
set -euo pipefail

if [ "$#" -ne 4 ]; then
  echo "usage: push-image.sh TARBALL IMAGE TAG DIGEST" >&2
  exit 2
fi
tarball=$1 image=$2 tag=$3 digest=$4
crane=${CRANE:-.tools/bin/crane}
summary=${GITHUB_STEP_SUMMARY:-/dev/null}

if existing=$("$crane" digest "$image:$tag" 2> /dev/null); then
  if [ "$existing" != "$digest" ]; then
    echo "::error::$image:$tag is $existing, but the stack was planned with $digest"
    exit 1
  fi
  echo "kept $image@$digest ($tag)" | tee -a "$summary"
  exit 0
fi
pushed=$("$crane" push "$tarball" "$image:$tag")
if [ "$pushed" != "$image@$digest" ]; then
  echo "::error::$tarball was pushed as ${pushed:-nothing}, not as the digest the images job recorded, $digest"
  exit 1
fi
echo "pushed $image@$digest ($tag)" | tee -a "$summary"
