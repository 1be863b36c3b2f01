# The update signing key of image/build.sh. Sourced, not run.
#
# Every update bundle is signed: a minisign signature of its SHA256SUMS,
# which `edgegw update` verifies with the public key the image carries at
# /usr/share/edgegw/update.pub before it writes anything.
#
#   EDGEGW_SIGNING_KEY=FILE           the release key's secret half (minisign -G)
#   EDGEGW_SIGNING_PUB=FILE           its public half (default: derived from
#                                     the secret key)
#   EDGEGW_SIGNING_KEY_PASSWORD=PW    its password (default: asked on the
#                                     terminal)
#
# With no EDGEGW_SIGNING_KEY the build signs with a throwaway test key kept
# in $OUT/test-signing-key/ (made on first use, then reused so that
# bundles built later match the image), and says so loudly: such an image
# takes updates from anyone who can read that directory.
#
# Sets SIGNER (the edgegw-sign tool), SIGN_KEY, SIGN_PUB, SIGN_KIND.

signing_key() {
	SIGNER=$WORK/edgegw-sign
	(cd "$REPO_DIR" && CGO_ENABLED=0 GOFLAGS=-buildvcs=false go build -trimpath -o "$SIGNER" ./image/cmd/edgegw-sign)
	if [ -n "${EDGEGW_SIGNING_KEY:-}" ]; then
		SIGN_KEY=$EDGEGW_SIGNING_KEY
		SIGN_KIND="release key (EDGEGW_SIGNING_KEY)"
		[ -r "$SIGN_KEY" ] || die "EDGEGW_SIGNING_KEY=$SIGN_KEY: not readable"
		if "$SIGNER" encrypted "$SIGN_KEY" 2> /dev/null && [ -z "${EDGEGW_SIGNING_KEY_PASSWORD+set}" ]; then
			[ -t 0 ] || die "$SIGN_KEY has a password: set EDGEGW_SIGNING_KEY_PASSWORD or run on a terminal"
			read -rsp "Password of the signing key $SIGN_KEY: " EDGEGW_SIGNING_KEY_PASSWORD; echo >&2
			export EDGEGW_SIGNING_KEY_PASSWORD
		fi
		if [ -n "${EDGEGW_SIGNING_PUB:-}" ]; then
			SIGN_PUB=$EDGEGW_SIGNING_PUB
			# That it matches the secret key is checked on every bundle:
			# make_bundle verifies each with it.
		else
			SIGN_PUB=$WORK/update.pub
			"$SIGNER" pubkey -key "$SIGN_KEY" -pub "$SIGN_PUB" || die "cannot read the signing key $SIGN_KEY"
		fi
	else
		local d=$OUT/test-signing-key
		SIGN_KEY=$d/minisign.key SIGN_PUB=$d/update.pub
		SIGN_KIND="THROWAWAY TEST KEY ($SIGN_KEY)"
		if [ ! -s "$SIGN_KEY" ] || [ ! -s "$SIGN_PUB" ]; then
			mkdir -p "$d"; chmod 0700 "$d"
			"$SIGNER" keygen -key "$SIGN_KEY" -pub "$SIGN_PUB"
			sed -i '1s/.*/untrusted comment: edgegw THROWAWAY TEST update key, not for release/' "$SIGN_PUB"
		fi
		log "WARNING: ******************************************************************"
		log "WARNING: no EDGEGW_SIGNING_KEY: bundles are signed with a THROWAWAY TEST KEY,"
		log "WARNING: $SIGN_KEY. This image installs any update signed with it:"
		log "WARNING: for tests and CI only, never for release (image/README.md, Signing keys)."
		log "WARNING: ******************************************************************"
	fi
	SIGN_ID=$(sed -n 2p "$SIGN_PUB" | base64 -d 2> /dev/null | od -An -tx8 -j2 -N8 | tr -d ' ' | tr a-f A-F)
	[ -n "$SIGN_ID" ] || die "$SIGN_PUB: not a minisign public key"
	log "update signing key $SIGN_ID: $SIGN_KIND"
}

# sign_bundle_sums DIR VERSION: DIR/SHA256SUMS.minisig.
sign_bundle_sums() {
	"$SIGNER" sign -key "$SIGN_KEY" -trusted "edgegw-update version=$2" "$1/SHA256SUMS" || die "signing $1/SHA256SUMS failed"
}
