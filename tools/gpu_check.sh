#!/usr/bin/env bash
# Check and measure everything that needs a GPU, on one GPU, in one command
# (tools/gpu_check.py says what it runs):
#   bash tools/gpu_check.sh OUT_DIR [--dry-run] [--smoke] [--budget S]
# On an offline GPU machine, carry the wheel folder made here by
# ../shared/gpu/wheelhouse.sh (.wheelhouse/): if the OpenMMLab stack is not
# importable, this installs it from there first.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import mmengine, mmpretrain, mmseg, vpt_mm' 2>/dev/null; then
    if [ -f .wheelhouse/install.sh ]; then
        bash .wheelhouse/install.sh
    else
        echo "mmengine/mmpretrain/mmseg/vpt_mm are not importable and there" \
             "is no .wheelhouse/ to install them from" >&2
        exit 1
    fi
fi
exec "$PYTHON" tools/gpu_check.py "$@"
