package show

import _ "embed"

// The shell completion scripts ask the binary itself for the words that
// may follow (urfave/cli's --generate-bash-completion, which prints the
// subcommands or flags and runs nothing). Fish's is made by urfave/cli
// from the command table.
var (
	//go:embed completion.bash
	bashCompletion string
	//go:embed completion.zsh
	zshCompletion string
)

// Completion is the completion script of shell bash or zsh ("" for
// another).
func Completion(shell string) string {
	switch shell {
	case "bash":
		return bashCompletion
	case "zsh":
		return zshCompletion
	}
	return ""
}
