package policy

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"

	units "github.com/docker/go-units"
)

var capNameRE = regexp.MustCompile(`^[A-Z][A-Z0-9_]{1,31}$`)

// Ulimit is one resource limit forced on every container.
type Ulimit struct {
	Name       string
	Soft, Hard int64
}

var ulimitNames = map[string]bool{
	"core": true, "cpu": true, "data": true, "fsize": true, "locks": true, "memlock": true,
	"msgqueue": true, "nice": true, "nofile": true, "nproc": true, "rss": true, "rtprio": true,
	"rttime": true, "sigpending": true, "stack": true,
}

// ParseUlimit reads "nofile=1024:4096" or "core=0".
func ParseUlimit(s string) (Ulimit, error) {
	name, val, ok := strings.Cut(s, "=")
	if !ok || !ulimitNames[name] {
		return Ulimit{}, fmt.Errorf("ulimit %q is not NAME=SOFT[:HARD] with a known NAME", s)
	}
	soft, hard, hasHard := strings.Cut(val, ":")
	if !hasHard {
		hard = soft
	}
	a, err1 := parseLimit(soft)
	b, err2 := parseLimit(hard)
	// -1 is unlimited (memlock=-1 for RDMA), above every number.
	if err1 != nil || err2 != nil || (b != -1 && (a == -1 || b < a)) {
		return Ulimit{}, fmt.Errorf("ulimit %q needs 0 <= SOFT <= HARD (-1 or unlimited: no limit)", s)
	}
	return Ulimit{Name: name, Soft: a, Hard: b}, nil
}

func parseLimit(s string) (int64, error) {
	if s == "unlimited" || s == "-1" {
		return -1, nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err == nil && n < 0 {
		err = fmt.Errorf("negative")
	}
	return n, err
}

func parseSize(s string) (int64, error) {
	n, err := units.RAMInBytes(s)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("size %q is not a size such as 64m or 1g", s)
	}
	return n, nil
}
