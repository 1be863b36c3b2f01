# Shared by the appliance's edgegw scripts. Sourced, not run.

EDGEGW_CONFIG=/etc/edgegw/edgegw.yaml
EDGEGW_RUN=/run/edgegw

# Appliance settings: /etc/edgegw/appliance.env (shell assignments, from the
# config partition), then edgegw.NAME=VALUE words on the kernel command line.
EDGEGW_HEALTH_DEADLINE=180
# first-boot: EDGEGW-CFG's authorized_keys is imported only while root has
# no SSH keys; replace: a changed one replaces them (provision). Read from
# the appliance.env an earlier boot imported: the one a stick brings takes
# effect at the boot after it.
EDGEGW_AUTHORIZED_KEYS=first-boot
if [ -r /etc/edgegw/appliance.env ]; then
	# shellcheck disable=SC1091
	. /etc/edgegw/appliance.env
fi
for _w in $(cat /proc/cmdline); do
	case "$_w" in
	edgegw.health_deadline=*) EDGEGW_HEALTH_DEADLINE=${_w#*=} ;;
	esac
done
unset _w

# admin_listen FILE: the admin.listen of a configuration file (the default's
# when it sets none). A line-based read of the one key it needs: the file has
# already passed `edgegw check`.
admin_listen() {
	awk '
		/^[^[:space:]#]/ { in_admin = ($0 ~ /^admin:[[:space:]]*$/) }
		in_admin && /^[[:space:]]+listen:/ {
			sub(/^[[:space:]]+listen:[[:space:]]*/, ""); sub(/[[:space:]]+#.*$/, "")
			gsub(/["'\'']/, ""); print; found = 1; exit
		}
		END { if (!found) print "127.0.0.1:9100" }' "$1"
}

# local_url ADDR: an HTTP base URL that reaches a listener bound to ADDR from
# this machine.
local_url() {
	case "$1" in
	0.0.0.0:*|:*) echo "http://127.0.0.1:${1##*:}" ;;
	"[::]:"*) echo "http://[::1]:${1##*:}" ;;
	*) echo "http://$1" ;;
	esac
}

# say MESSAGE: to the journal and the serial console (the units send
# standard output to both).
say() { printf '%s\n' "$*"; }
