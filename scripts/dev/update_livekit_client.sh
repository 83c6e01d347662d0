#!/usr/bin/env bash
# Vendors the LiveKit JavaScript client (npm package livekit-client, Apache-2.0) into web/js/vendor/:
# the live panel plays LiveAvatar and HeyGen sessions through it, and nothing may come from a CDN.
# Usage: scripts/dev/update_livekit_client.sh [VERSION]   (default: the version in web/js/vendor/README.md)
# Needs npm (registry access). It downloads the published tarball with `npm pack`, checks the
# registry's integrity hash, and copies dist/livekit-client.esm.mjs and LICENSE unchanged; then update
# the version and sha256 in web/js/vendor/README.md and run the browser tests.
set -euo pipefail
here="$(cd "$(dirname "$0")/../.." && pwd)"
version="${1:-$(sed -n 's/^- version: \([0-9.]*\)$/\1/p' "$here/web/js/vendor/README.md")}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
npm pack "livekit-client@${version}" --silent >/dev/null
tgz="livekit-client-${version}.tgz"
want="$(npm view "livekit-client@${version}" dist.integrity)"
got="sha512-$(openssl dgst -sha512 -binary "$tgz" | base64 -w0)"
[ "$want" = "$got" ] || { echo "integrity mismatch for $tgz: registry $want, file $got" >&2; exit 1; }
tar xzf "$tgz"
[ "$(node -p "require('./package/package.json').license")" = "Apache-2.0" ] || { echo "licence changed: check it" >&2; exit 1; }
cp package/dist/livekit-client.esm.mjs "$here/web/js/vendor/livekit-client.esm.mjs"
cp package/LICENSE "$here/web/js/vendor/LICENSE.livekit-client"
echo "livekit-client ${version}: sha256 $(sha256sum "$here/web/js/vendor/livekit-client.esm.mjs" | cut -d' ' -f1)"
