#!/usr/bin/env bash
# Run the whole test suite, as CI does. Installs the Debian packages the tests need when
# they are missing (tests/debian-packages.txt), then: format check, clippy, all tests.
#
#   ./scripts/test.sh
#
# Needs a Rust toolchain (rustup's stable; Debian's own cargo is too old) and root, or sudo,
# for the package install and for the test that fills a small tmpfs to prove a full disk
# loses nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
    echo "test.sh: cargo not found. Install Rust with rustup (https://rustup.rs), then run again." >&2
    exit 1
fi

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

missing=()
while read -r pkg; do
    case "$pkg" in ''|'#'*) continue ;; esac
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done < tests/debian-packages.txt
if [ ${#missing[@]} -gt 0 ]; then
    echo "test.sh: installing ${missing[*]}"
    # Postfix installs unconfigured: the test runs its own private instance.
    echo "postfix postfix/main_mailer_type select No configuration" | as_root debconf-set-selections
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi

# Python client libraries from PyPI (imapclient, jmapc, ...) go into a virtual environment of
# the test run's own; tests run it through $MSG_TEST_PYTHON.
if [ -s tests/python-requirements.txt ]; then
    if [ ! -x target/pyenv/bin/python3 ]; then
        mkdir -p target
        python3 -m venv --system-site-packages target/pyenv
    fi
    if ! target/pyenv/bin/python3 -m pip install -q --disable-pip-version-check -r tests/python-requirements.txt; then
        echo "test.sh: pip could not install tests/python-requirements.txt" >&2
        exit 1
    fi
    export MSG_TEST_PYTHON="$PWD/target/pyenv/bin/python3"
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "test.sh: warning: not root; the full-disk test (it mounts a small tmpfs) will fail" >&2
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "== cargo test"
mkdir -p target
set +e
cargo test --workspace --no-fail-fast 2>&1 | tee target/test-output.txt
status=${PIPESTATUS[0]}
set -e
# One closing line over every test binary.
sum() { grep -E '^test result:' target/test-output.txt | sed -E "s/.* ([0-9]+) $1.*/\1/" | awk '{s+=$1} END {print s+0}'; }
echo "$(sum passed) passed, $(sum failed) failed"
exit "$status"
