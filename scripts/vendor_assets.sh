#!/usr/bin/env bash
# Re-vendor the web assets heedful serves offline (no CDN): Swagger UI for /docs.
# Usage: bash scripts/vendor_assets.sh   (needs npm; writes heedful/assets/)
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
(cd "$tmp" && npm pack swagger-ui-dist@5.35.0 >/dev/null && tar xzf swagger-ui-dist-*.tgz)
cp "$tmp/package/swagger-ui-bundle.js" "$tmp/package/swagger-ui.css" heedful/assets/
cp "$tmp/package/LICENSE" heedful/assets/swagger-ui.LICENSE
rm -rf "$tmp"
echo "vendored swagger-ui-dist 5.35.0 into heedful/assets/"
