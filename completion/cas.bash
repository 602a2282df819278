# bash completion for the CAS commands (cas, cas-admin, cas-unpack, cas-ident,
# cas-dmesg, cas-findkernel, cas-extract, cas-crash, cas-mail, cas-jobs, ...).
# Options are read from each command's own --help (once per shell), so they
# never drift from the code; option arguments complete as files, directories,
# fixed choices, or job names from the database ("cas-jobs --json").

_cas_options()  # the options of command $1, from its --help, cached
{
    local cmd=$1 key=${1//[^A-Za-z0-9]/_}
    local -n _cas_cached=_cas_opts_$key 2>/dev/null || return
    if [[ -z ${_cas_cached-} ]]; then
        _cas_cached=$(LC_ALL=C "$cmd" --help 2>/dev/null \
            | grep -oE '(^|[ ,\[])--?[A-Za-z][-A-Za-z0-9_]*' | sed 's/^[ ,\[]*//' | sort -u)
    fi
    printf '%s\n' "$_cas_cached"
}

_cas_jobs()  # job names known to the database, when cas-jobs is installed
{
    type -P cas-jobs >/dev/null || return 0
    timeout 5 cas-jobs --json 2>/dev/null \
        | grep -oE '"job": *"[^"]*"' | sed -E 's/.*"([^"]*)"$/\1/' | sort -u
}

_cas_complete()
{
    local cur prev words cword
    _init_completion -s || return
    local cmd=${words[0]##*/}

    case $prev in
        -c|--config|-f|--file|--compress|--rpm|--vmlinux|--package)
            _filedir; return ;;
        --workdir|--resend|--modules-prefix)
            _filedir -d; return ;;
        -j|--job)
            [[ $cmd == cas-worker ]] && return  # there -j is the old spelling of --jobs N
            COMPREPLY=($(compgen -W "$(_cas_jobs)" -- "$cur")); return ;;
        --compress-format)
            COMPREPLY=($(compgen -W "xz zstd" -- "$cur")); return ;;
        --machine|-M)
            [[ $cmd == cas-worker ]] && return  # there --machine is a host name
            COMPREPLY=($(compgen -W "x86_64 i686 i386 aarch64 ppc64le ppc64 s390x" -- "$cur"))
            return ;;
        -i|--identifier|--id|-e|--email|--release|-r|--build-id|-b|--buffersize|--wait|--member\
        |--jobs|--run-job|--cancel|--rerun|--since|--signature|--state|--listen|--add-user)
            return ;;  # free text
    esac
    $split && return

    if [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "$(_cas_options "${words[0]}")" -- "$cur"))
        [[ ${COMPREPLY-} == *= ]] && compopt -o nospace
        return
    fi
    case $cmd in
        cas-jobs) COMPREPLY=($(compgen -W "$(_cas_jobs)" -- "$cur")) ;;
        cas-admin|cas-findkernel|cas-extract|cas-mail|cas-worker|cas-web) ;;  # no positional arguments
        *) _filedir ;;  # dumps, cores, vmlinux files
    esac
} &&
    complete -F _cas_complete cas cas-admin cas-unpack cas-ident cas-dmesg cas-findkernel \
        cas-extract cas-crash cas-triage cas-mail cas-worker cas-jobs cas-web

# ex: filetype=sh
