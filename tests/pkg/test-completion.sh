#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# bash completion (packaging/bash-completion/amesh) driven as bash does on TAB, and checked
# against the binary's own --help: every command, subcommand and flag it prints completes.
. "$(dirname "$0")/../lib.sh"

BC=/usr/share/bash-completion/bash_completion
if [ ! -r "$BC" ]; then
	echo "1..0 # SKIP bash-completion is not installed (apt-get install bash-completion)"
	exit 0
fi
trap cleanup EXIT
plan 8

# shellcheck disable=SC1090
. "$BC"
# shellcheck disable=SC1091
. "$SRCDIR/packaging/bash-completion/amesh"

# comp WORD...: the completions bash offers for the command line "WORD... " with the cursor at
# the end of the last word (give "" as the last word for a TAB after a space).
comp() {
	COMP_WORDS=("$@")
	COMP_CWORD=$(($# - 1))
	COMP_LINE="$*"
	COMP_POINT=${#COMP_LINE}
	COMPREPLY=()
	_amesh amesh "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD - 1]}"
	printf '%s\n' "${COMPREPLY[@]}" | sort -u
}
# lacks WANTED... -- GOT...: prints the wanted words that are not offered.
lacks() {
	local w m=""
	for w in $1; do grep -qxF -- "$w" <<<"$2" || m="$m $w"; done
	echo "$m"
}

cmds=$("$AMESH" --help | sed -n '/^Commands:/,/^$/s/^  \([a-z]*\) .*/\1/p')
OUT=$(lacks "$cmds" "$(comp amesh "")")
check "every command of amesh --help completes ($(echo $cmds))" '[ -n "$cmds" ] && [ -z "$OUT" ]'

globals=$("$AMESH" --help | grep -o -- '--[a-z-]*' | sort -u)
OUT=$(lacks "$globals" "$(comp amesh --)")
check "every global option completes ($(echo $globals))" '[ -n "$globals" ] && [ -z "$OUT" ]'

# Each command's options, per subcommand where it has them ("  add --netns PATH ...").
missing=""
for c in $cmds; do
	help=$("$AMESH" "$c" --help | sed -n '/^Options:/,/^Global options:/p')
	subs=$(sed -n 's/^  \([a-z][a-z]*\)\( .*\)\{0,1\}$/\1/p' <<<"$help")
	if [ -z "$subs" ]; then
		flags=$(grep -o -- '--[a-z-]*' <<<"$help" | sort -u)
		[ -z "$flags" ] && continue
		m=$(lacks "$flags" "$(comp amesh "$c" --)")
		[ -n "$m" ] && missing="$missing $c:$m"
		continue
	fi
	OUT=$(lacks "$subs" "$(comp amesh "$c" "")")
	[ -n "$OUT" ] && missing="$missing $c:$OUT"
	for s in $subs; do
		flags=$(grep "^  $s\b" <<<"$help" | grep -o -- '--[a-z-]*' | sort -u)
		[ -z "$flags" ] && continue
		m=$(lacks "$flags" "$(comp amesh "$c" "$s" --)")
		[ -n "$m" ] && missing="$missing $c $s:$m"
	done
done
check "every subcommand and option of every command's --help completes" '[ -z "$missing" ]'
[ -n "$missing" ] && echo "# missing:$missing"

OUT=$(comp amesh --log-format "")
check "--log-format offers text and json" '[ "$(echo $OUT)" = "json text" ]'
OUT=$(comp amesh -v ca is)
check "options before the command do not hide it (amesh -v ca is -> issue)" '[ "$OUT" = issue ]'
OUT=$(comp amesh -c /etc/amesh/amesh.conf cni add --workload x --)
check "a subcommand's options after its values (cni add ... -- -> --netns)" \
	'grep -qx -- --netns <<<"$OUT"'
cd "$TMP" && : >amesh-test.conf
OUT=$(comp amesh -c amesh-te)
check "-c completes a file name" '[ "$OUT" = amesh-test.conf ]'
OUT=$(comp amesh ztunnel --nam)
check "no option is offered where the command has none (ztunnel --nam)" '[ -z "$OUT" ]'
tap_done
