"""Put the image digests a deploy chose into its stack file, in the job's checkout only (stack.yml, smb.yml).

    python .github/scripts/use_images.py STACK KEY=DIGEST [KEY=DIGEST ...]

Each KEY is a field of `model-serving:image` (`digest`, `runnerDigest`, `retrainDigest`) whose one committed
`sha256:` line is replaced, so the plan, the gate and `up` name the images of this commit's sources while the
file's comments and layout stay. Fails closed, leaving the file as it was: a value that is not a digest, a key
the file does not hold exactly once, or a replacement that would change anything but those fields.
"""

import re
import sys
from pathlib import Path

import yaml

DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


def parse(pairs: list[str]) -> dict[str, str]:
    """KEY=DIGEST arguments as a mapping; refuses anything that is not a digest."""
    digests = dict(pair.partition("=")[::2] for pair in pairs)
    bad = {key: value for key, value in digests.items() if not DIGEST.fullmatch(value)}
    if not digests or bad:
        raise SystemExit(f"not image digests: {bad or 'none given'}")
    return digests


def replaced(path: Path, digests: dict[str, str]) -> str:
    """The stack file's text with the digests in place; only those fields may change."""
    text = path.read_text()
    before = yaml.safe_load(text)["config"]
    for key, value in digests.items():
        pattern = rf"^([ \t]+{re.escape(key)}:[ \t]*)sha256:[0-9a-f]{{64}}[ \t]*$"
        text, found = re.subn(pattern, rf"\g<1>{value}", text, flags=re.MULTILINE)
        if found != 1:
            raise SystemExit(f"{path}: expected one model-serving:image.{key} to replace, found {found}")
    after = yaml.safe_load(text)["config"]
    image = {**(before.get("model-serving:image") or {}), **digests}
    if after != {**before, "model-serving:image": image}:
        raise SystemExit(f"{path}: replacing the image digests would change more than model-serving:image")
    return text


def main(argv: list[str]) -> None:
    """Rewrite Pulumi.<stack>.yaml in the working directory."""
    if len(argv) < 2:
        raise SystemExit("usage: use_images.py STACK KEY=DIGEST [KEY=DIGEST ...]")
    path = Path(f"Pulumi.{argv[0]}.yaml")
    digests = parse(argv[1:])
    path.write_text(replaced(path, digests))
    print(f"{path}: " + ", ".join(f"{key} {value}" for key, value in digests.items()))


if __name__ == "__main__":
    main(sys.argv[1:])
