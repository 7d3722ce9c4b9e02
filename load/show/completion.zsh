#compdef optsync
# zsh completion for optsync: save as _optsync in a folder of $fpath
# (optsync completion zsh > "${fpath[1]}/_optsync"), or source it after compinit.
_optsync() {
  local -a opts
  local cur=${words[-1]}
  if [[ "$cur" == -* ]]; then
    opts=("${(@f)$(${words[@]:0:#words[@]-1} ${cur} --generate-bash-completion 2>/dev/null)}")
  else
    opts=("${(@f)$(${words[@]:0:#words[@]-1} --generate-bash-completion 2>/dev/null)}")
  fi
  if [[ "${opts[1]}" != "" ]]; then
    _describe 'values' opts
  else
    _files
  fi
}
if [[ "$funcstack[1]" == "_optsync" ]]; then
  _optsync "$@"
else
  compdef _optsync optsync
fi
