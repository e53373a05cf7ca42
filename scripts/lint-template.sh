#!/usr/bin/env bash
# Lints template.yaml twice, offline, with pinned tools in cached venvs:
# 1. cfn-lint after our own SAM translation (scripts/lint-template.py: the translated resources
#    are what CloudFormation sees, so bad !Ref/!GetAtt inside serverless resources are caught);
# 2. the SAM CLI's own `sam validate --lint`, as a deployer runs it (no credentials, no network;
#    telemetry off).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
export AWS_DEFAULT_REGION=${AWS_DEFAULT_REGION:-us-east-1}
venv=$("$here/python-venv.sh" cfnlint 'cfn-lint==1.58.0' 'aws-sam-translator==1.115.0')
"$venv/bin/python" "$here/lint-template.py" "$here/../template.yaml"
sam_venv=$("$here/python-venv.sh" sam-cli 'aws-sam-cli==1.170.0')
SAM_CLI_TELEMETRY=0 "$sam_venv/bin/sam" validate --lint --template "$here/../template.yaml"
