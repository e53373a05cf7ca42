#!/usr/bin/env bash
# Lints template.yaml with cfn-lint after SAM translation, both pinned in a cached venv.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
venv=$("$here/python-venv.sh" cfnlint 'cfn-lint==1.58.0' 'aws-sam-translator==1.115.0')
AWS_DEFAULT_REGION=${AWS_DEFAULT_REGION:-us-east-1} "$venv/bin/python" "$here/lint-template.py" "$here/../template.yaml"
