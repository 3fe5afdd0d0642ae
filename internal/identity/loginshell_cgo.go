//go:build cgo

package identity

/*
#include <errno.h>
#include <pwd.h>
#include <stdlib.h>
#include <sys/types.h>

static int shell_of(uid_t uid, char *buf, size_t len, char **shell) {
	struct passwd pw, *res = NULL;
	int err = getpwuid_r(uid, &pw, buf, len, &res);
	if (err != 0) return err;
	if (res == NULL) return ENOENT;
	*shell = pw.pw_shell;
	return 0;
}
*/
import "C"

import (
	"syscall"
	"unsafe"
)

// LoginShell is uid's login shell from the user database (NSS: files,
// LDAP, sssd), "" when it has none or cannot be read. os/user does not
// expose it.
func LoginShell(uid uint32) string {
	for size := C.size_t(4096); size <= 1<<20; size *= 4 {
		buf := C.malloc(size)
		var shell *C.char
		rc := C.shell_of(C.uid_t(uid), (*C.char)(buf), size, &shell)
		var s string
		if rc == 0 && shell != nil {
			s = C.GoString(shell)
		}
		C.free(unsafe.Pointer(buf))
		if syscall.Errno(rc) != syscall.ERANGE {
			return s
		}
	}
	return ""
}
