#!/usr/bin/env bash
# Builds the Tiller playground and serves it locally, rebuilding on changes.
#
#   bash scripts/serve.sh              serves http://127.0.0.1:8080
#   PORT=9000 bash scripts/serve.sh    another port (ADDRESS for another address)
#   bash scripts/serve.sh --debug      extra arguments go to `cargo xtask serve`
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

echo
echo "serve: building the page (the first build takes several minutes); once it says it is"
echo "serve: serving, open http://$ADDRESS:$PORT/"
echo "serve: (to load a model from disk, see README.md, 'Serving a model from disk')"
echo
exec cargo xtask serve --address "$ADDRESS" --port "$PORT" "$@"
