"""Lints template.yaml the way `sam validate` would, offline: translate the SAM template to
plain CloudFormation with aws-sam-translator, then run cfn-lint on both the raw template and
the translation (the raw pass catches misspelt properties, the translated pass bad references,
runtimes and event properties inside serverless functions)."""

import json
import os
import subprocess
import sys
import tempfile

from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse


class NoManagedPolicies:
    """The translator asks for AWS managed policy ARNs; offline there are none to load."""

    def load(self):
        return {}

    def get(self, name):
        return None


def main(path):
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    with open(path) as f:
        template = yaml_parse(f.read())
    for resource in template.get("Resources", {}).values():
        properties = resource.get("Properties", {})
        code = properties.get("CodeUri")
        if isinstance(code, str) and not code.startswith("s3://"):
            properties["CodeUri"] = "s3://placeholder-bucket/placeholder.zip"
    translated = transform(template, {"AWS::Region": "us-east-1", "AWS::Partition": "aws"}, NoManagedPolicies())
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as out:
        json.dump(translated, out, indent=1, default=str)
    status = 0
    for target in (path, out.name):
        result = subprocess.run([os.path.join(os.path.dirname(sys.executable), "cfn-lint"), target])
        if result.returncode != 0:
            print(f"cfn-lint found problems in {target}", file=sys.stderr)
            status = 1
    os.unlink(out.name)
    if status == 0:
        print(f"{path}: SAM translation and cfn-lint passed")
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "template.yaml"))
