package show

import (
	_ "embed"
	"fmt"
	"io"
)

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

// ShellError is a shell that completion has no script for: a usage error.
type ShellError struct{ Shell string }

func (e *ShellError) Error() string {
	return fmt.Sprintf("completion %q: want bash, zsh or fish", e.Shell)
}

// WriteCompletion writes the completion script of shell to w; fish makes
// fish's (urfave/cli's, from the command table).
func WriteCompletion(w io.Writer, shell string, fish func() (string, error)) error {
	switch {
	case shell == "fish":
		return write(w, "fish completion", fish)
	case Completion(shell) != "":
		_, err := io.WriteString(w, Completion(shell))
		return err
	}
	return &ShellError{Shell: shell}
}

// WriteMan writes the man page (roff, section 1) that man makes from the
// command table (urfave/cli's) to w.
func WriteMan(w io.Writer, man func(section int) (string, error)) error {
	return write(w, "man page", func() (string, error) { return man(1) })
}

func write(w io.Writer, what string, made func() (string, error)) error {
	s, err := made()
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	_, err = io.WriteString(w, s)
	return err
}
