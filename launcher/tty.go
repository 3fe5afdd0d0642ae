package launcher

import (
	"context"
	"os"

	"github.com/moby/moby/client"
	"golang.org/x/sys/unix"
)

// makeRaw puts the terminal into raw mode, so that keys reach the
// container's terminal unprocessed; it returns the restore function, or nil
// when f is not a terminal.
func makeRaw(f *os.File) func() {
	fd := int(f.Fd())
	old, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return nil
	}
	raw := *old
	raw.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
	raw.Oflag &^= unix.OPOST
	raw.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
	raw.Cflag &^= unix.CSIZE | unix.PARENB
	raw.Cflag |= unix.CS8
	raw.Cc[unix.VMIN] = 1
	raw.Cc[unix.VTIME] = 0
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, &raw); err != nil {
		return nil
	}
	return func() { unix.IoctlSetTermios(fd, unix.TCSETS, old) }
}

// resize gives the container's terminal the caller's window size.
func resize(ctx context.Context, eng Engine, id string, f *os.File) {
	ws, err := unix.IoctlGetWinsize(int(f.Fd()), unix.TIOCGWINSZ)
	if err != nil || ws.Row == 0 {
		return
	}
	eng.ContainerResize(ctx, id, client.ContainerResizeOptions{Height: uint(ws.Row), Width: uint(ws.Col)})
}
