//go:build linux

package extract

import (
	"fmt"
	"io/fs"
	"syscall"
	"time"
)

// stampOf is what the file system says of the file fi describes that
// changes whenever its bytes may have: its device and inode, size,
// modification time and change time (the kernel's own, which no tool
// sets back). Empty when it cannot be read, or when the file was changed
// in the last few seconds of now: a write within the file system's clock
// tick of the listing could leave every part as it was (git's "racy"
// entries), so such a file is hashed until it is older.
func stampOf(fi fs.FileInfo, now time.Time) string {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return ""
	}
	ctime := time.Unix(int64(st.Ctim.Sec), int64(st.Ctim.Nsec))
	if now.Sub(ctime) < racyWithin || now.Sub(fi.ModTime()) < racyWithin {
		return ""
	}
	return fmt.Sprintf("%x.%x.%x.%x.%x", uint64(st.Dev), uint64(st.Ino), st.Size, fi.ModTime().UnixNano(), ctime.UnixNano())
}

// racyWithin is how recently changed a file's stamp does not vouch for
// its bytes.
const racyWithin = 2 * time.Second
