# Sourced by scripts/run and scripts/test: a .venv with the project and its test extras installed,
# reinstalled only when setup.cfg changes.
python=""
for candidate in python3.11 python3 python; do
    if command -v "$candidate" >/dev/null 2>&1 &&
        "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] < (3, 11))' 2>/dev/null; then
        python=$candidate
        break
    fi
done
if [[ -z $python ]]; then
    echo "isvserver needs Python 3.11 or newer on PATH" >&2
    exit 1
fi
if [[ ! -x .venv/bin/python ]]; then
    "$python" -m venv .venv
fi
stamp=.venv/.isvserver-installed
wanted=$(sha256sum setup.cfg pyproject.toml | sha256sum | cut -d' ' -f1)
if [[ ! -f $stamp || $(cat "$stamp") != "$wanted" ]]; then
    echo "installing isvserver and its dependencies into .venv ..." >&2
    .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
    # setuptools says "Editable installation." on every editable install of a flat layout: not news here.
    PYTHONWARNINGS="ignore:Editable installation" \
        .venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
    echo "$wanted" >"$stamp"
fi
