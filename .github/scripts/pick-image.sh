#!/usr/bin/env bash
# Which digest of one image a stack deploys (stack.yml's and smb.yml's preview jobs), printed on stdout:
#   pick-image.sh IMAGE TAG BUILT_DIGEST
# The image the stack's registry already holds under the source tag TAG (its sources have not changed: a
# rebuild, never byte-identical, would replace it for nothing), else BUILT_DIGEST, this run's build (new
# sources, or a first deploy whose repository does not exist yet). Any other error from the registry (no
# access, throttling) fails: an unreadable registry is not an absent image.
set -euo pipefail

if [ "$#" -ne 3 ]; then
  echo "usage: pick-image.sh IMAGE TAG BUILT_DIGEST" >&2
  exit 2
fi
image=$1 tag=$2 built=$3
errors=$(mktemp)
trap 'rm -f "$errors"' EXIT

if found=$(aws ecr describe-images --repository-name "${image#*/}" --image-ids "imageTag=$tag" \
    --query 'imageDetails[0].imageDigest' --output text 2> "$errors"); then
  echo "$found"
elif grep -qE "ImageNotFoundException|RepositoryNotFoundException" "$errors"; then
  echo "$built"
else
  cat "$errors" >&2
  exit 1
fi
