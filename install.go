package main

import (
	"fmt"
	"io"

	"github.com/urfave/cli/v2"
)

// Shell completion scripts: they ask the binary itself for the words that
// may follow (urfave/cli's --generate-bash-completion, which prints the
// subcommands or flags and runs nothing).
const bashCompletion = `# bash completion for optsync: source this file, or save it as
# /etc/bash_completion.d/optsync (optsync completion bash > /etc/bash_completion.d/optsync)
_optsync_complete() {
  local cur="${COMP_WORDS[COMP_CWORD]}"
  local words=("${COMP_WORDS[@]:0:COMP_CWORD}")
  local opts
  if [[ "$cur" == -* ]]; then
    opts=$("${words[@]}" "$cur" --generate-bash-completion 2>/dev/null)
  else
    opts=$("${words[@]}" --generate-bash-completion 2>/dev/null)
  fi
  COMPREPLY=($(compgen -W "${opts}" -- "${cur}"))
}
complete -o bashdefault -o default -F _optsync_complete optsync
`

const zshCompletion = `#compdef optsync
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
`

// installCommands are version, completion and man.
func installCommands(stdout io.Writer, onUsage cli.OnUsageErrorFunc) []*cli.Command {
	return []*cli.Command{
		{
			Name:         "version",
			Usage:        "the version, VCS revision and commit time this binary was built from",
			OnUsageError: onUsage,
			Action: func(c *cli.Context) error {
				readBuildInfo().write(stdout)
				return nil
			},
		},
		{
			Name:         "completion",
			Usage:        "print a shell completion script: completion bash|zsh|fish",
			ArgsUsage:    "bash|zsh|fish",
			OnUsageError: onUsage,
			Action: func(c *cli.Context) error {
				switch shell := c.Args().First(); shell {
				case "bash":
					_, err := io.WriteString(stdout, bashCompletion)
					return err
				case "zsh":
					_, err := io.WriteString(stdout, zshCompletion)
					return err
				case "fish":
					s, err := c.App.ToFishCompletion()
					if err != nil {
						return fmt.Errorf("fish completion: %w", err)
					}
					_, err = io.WriteString(stdout, s)
					return err
				default:
					return usagef("completion %q: want bash, zsh or fish", shell)
				}
			},
		},
		{
			Name:         "man",
			Usage:        "print the man page (roff): optsync man > /usr/local/share/man/man1/optsync.1",
			OnUsageError: onUsage,
			Action: func(c *cli.Context) error {
				s, err := c.App.ToManWithSection(1)
				if err != nil {
					return fmt.Errorf("man page: %w", err)
				}
				_, err = io.WriteString(stdout, s)
				return err
			},
		},
	}
}
