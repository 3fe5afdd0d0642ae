package identity

import (
	"fmt"
	"os/user"
	"slices"
	"strconv"

	"github.com/containerjob/containerjob/internal/hint"
)

// Caller is the user a privileged containerjob serves, from the user
// database: never from anything the user described.
type Caller struct {
	User   string
	UID    uint32
	GID    uint32   // the primary group, or the one sudo ran the user under
	Groups []uint32 // the other groups, GID excluded, in the database's order
	// GroupNames names each of the caller's groups (GID included) that has
	// a name; a group without one is absent.
	GroupNames map[uint32]string
	Home       string
}

// AllGroups is GID followed by Groups.
func (c Caller) AllGroups() []uint32 { return append([]uint32{c.GID}, c.Groups...) }

// UserDB is the user database: the system's (System) or a test's.
type UserDB interface {
	Lookup(name string) (*user.User, error)
	LookupID(uid string) (*user.User, error)
	GroupIDs(u *user.User) ([]string, error)
	GroupName(gid string) (string, error)
}

type systemDB struct{}

func (systemDB) Lookup(name string) (*user.User, error)  { return user.Lookup(name) }
func (systemDB) LookupID(uid string) (*user.User, error) { return user.LookupId(uid) }
func (systemDB) GroupIDs(u *user.User) ([]string, error) { return u.GroupIds() }
func (systemDB) GroupName(gid string) (string, error) {
	g, err := user.LookupGroupId(gid)
	if err != nil {
		return "", err
	}
	return g.Name, nil
}

// System is the node's user database (NSS).
var System UserDB = systemDB{}

// CallerOf builds the caller from the database's record u. gid, when not
// nil, is the group sudo reports; it must be one the user really has.
func CallerOf(db UserDB, u *user.User, gid *uint32) (Caller, error) {
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return Caller{}, fmt.Errorf("user %q has a non-numeric uid", u.Username)
	}
	primary, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return Caller{}, fmt.Errorf("user %q has a non-numeric gid", u.Username)
	}
	gids, err := db.GroupIDs(u)
	if err != nil {
		return Caller{}, fmt.Errorf("groups of user %q cannot be listed: %w", u.Username, err)
	}
	c := Caller{User: u.Username, UID: uint32(uid), GID: uint32(primary), Home: u.HomeDir, GroupNames: map[uint32]string{}}
	all := []uint32{uint32(primary)}
	for _, g := range gids {
		n, err := strconv.ParseUint(g, 10, 32)
		if err == nil && !slices.Contains(all, uint32(n)) {
			all = append(all, uint32(n))
		}
	}
	if gid != nil {
		if !slices.Contains(all, *gid) {
			return Caller{}, fmt.Errorf("group %d is not one of user %q's groups", *gid, u.Username)
		}
		c.GID = *gid
	}
	for _, g := range all {
		if g != c.GID {
			c.Groups = append(c.Groups, g)
		}
		if name, err := db.GroupName(strconv.FormatUint(uint64(g), 10)); err == nil {
			c.GroupNames[g] = name
		}
	}
	if c.UID == 0 {
		return Caller{}, hint.Errorf("name an ordinary user", "containers never run as root")
	}
	return c, nil
}

// Privileged decides whose request a root process serves: via sudo, the
// user sudo ran it for (sudoUID, and sudoGID when it is a number); as root,
// the user root names with --as-user (asUser), by name or uid.
func Privileged(db UserDB, inv Invocation, sudoUID uint32, sudoGID, asUser string) (Caller, error) {
	switch inv {
	case ViaSudo:
		if asUser != "" {
			return Caller{}, fmt.Errorf("--as-user is for root only")
		}
		u, err := db.LookupID(strconv.FormatUint(uint64(sudoUID), 10))
		if err != nil {
			return Caller{}, fmt.Errorf("uid %d is not in the user database: %w", sudoUID, err)
		}
		var gid *uint32
		if g, err := strconv.ParseUint(sudoGID, 10, 32); err == nil {
			v := uint32(g)
			gid = &v
		}
		return CallerOf(db, u, gid)
	case AsRoot:
		if asUser == "" {
			return Caller{}, hint.Errorf("as root, name the job's owner with --as-user", "containers never run as root")
		}
		u, err := db.Lookup(asUser)
		if err != nil {
			if _, nerr := strconv.ParseUint(asUser, 10, 32); nerr == nil {
				u, err = db.LookupID(asUser)
			}
		}
		if err != nil {
			return Caller{}, fmt.Errorf("--as-user %q is not in the user database", asUser)
		}
		return CallerOf(db, u, nil)
	}
	return Caller{}, fmt.Errorf("not privileged")
}
