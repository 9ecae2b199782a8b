#!/usr/bin/env bash
# Retrain a shipped pretrained estimator from its recipe (nlme_ppl/estimators/_pretrained.py).
# Usage: scripts/train_pretrained.sh [NAME] [PYTHON]     (default: frohlich_simple, python)
# Writes nlme_ppl/pretrained/NAME.nlp and docs/img/loss_NAME.png. About 28 min for frohlich_simple on a 2-core CPU.
set -euo pipefail
NAME="${1:-frohlich_simple}"
PY="${2:-python}"
cd "$(dirname "$0")/.."
mkdir -p docs/img
"$PY" -c "
from nlme_ppl.estimators._pretrained import train_pretrained
train_pretrained('$NAME', 'nlme_ppl/pretrained/$NAME.nlp', loss_plot='docs/img/loss_$NAME.png')
"
