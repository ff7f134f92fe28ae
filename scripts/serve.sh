#!/usr/bin/env bash
# Builds the Tiller playground and serves it locally, rebuilding on changes.
#
#   bash scripts/serve.sh              serves http://127.0.0.1:8080
#   PORT=9000 bash scripts/serve.sh    another port
#   bash scripts/serve.sh --open       extra arguments go to `trunk serve`
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

CARGO_BIN="${CARGO_HOME:-$HOME/.cargo}/bin"
case ":$PATH:" in
    *":$CARGO_BIN:"*) ;;
    *) export PATH="$CARGO_BIN:$PATH" ;;
esac

PORT="${PORT:-8080}"
ADDRESS="${ADDRESS:-127.0.0.1}"

bash scripts/setup.sh

if [ ! -f index.html ]; then
    echo "serve: no index.html at the repo root yet: nothing to serve" >&2
    exit 1
fi

echo
echo "serve: building the page; once trunk says it is serving, open http://$ADDRESS:$PORT/"
echo "serve: (to load a model from disk, see README.md, 'Serving a model from disk')"
echo
exec trunk serve --release --address "$ADDRESS" --port "$PORT" "$@"
