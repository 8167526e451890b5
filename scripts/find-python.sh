#!/bin/sh
# Print the path of a Python >= 3.12 interpreter, or fail with a message.
# Looks at python3.12 / python3.13 / python3 on PATH, then at pyenv's versions
# (pymc 6, arviz 1 and jax 0.12 need Python >= 3.12; the oldest such, 3.12, is preferred
# because the stack was checked on it).
ok() { "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' >/dev/null 2>&1; }
for c in python3.12 python3.13 python3 python; do
  p=$(command -v "$c" 2>/dev/null) || continue
  if ok "$p"; then echo "$p"; exit 0; fi
done
root=""
if command -v pyenv >/dev/null 2>&1; then root=$(pyenv root 2>/dev/null); fi
[ -n "$root" ] || root="${PYENV_ROOT:-$HOME/.pyenv}"
if [ -d "$root/versions" ]; then
  for v in $(ls "$root/versions" 2>/dev/null | grep '^3\.' | sort -t. -k2,2n -k3,3nr); do
    if ok "$root/versions/$v/bin/python3"; then echo "$root/versions/$v/bin/python3"; exit 0; fi
  done
fi
echo "error: no Python >= 3.12 found (tried python3.13, python3.12, python3 and pyenv)." >&2
echo "Install one (e.g. 'pyenv install 3.12') and re-run." >&2
exit 1
