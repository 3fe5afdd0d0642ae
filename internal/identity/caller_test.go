package identity

import (
	"fmt"
	"maps"
	"os/user"
	"slices"
	"strings"
	"testing"
)

// fakeDB is a user database of a few users, so whose request a root
// process serves is decided without root and without the node's NSS.
type fakeDB struct {
	users  []user.User
	groups map[string][]string // username -> group ids
	names  map[string]string   // gid -> name
}

func (d fakeDB) Lookup(name string) (*user.User, error) {
	for i := range d.users {
		if d.users[i].Username == name {
			return &d.users[i], nil
		}
	}
	return nil, user.UnknownUserError(name)
}

func (d fakeDB) LookupID(uid string) (*user.User, error) {
	for i := range d.users {
		if d.users[i].Uid == uid {
			return &d.users[i], nil
		}
	}
	return nil, fmt.Errorf("no uid %s", uid)
}

func (d fakeDB) GroupIDs(u *user.User) ([]string, error) { return d.groups[u.Username], nil }

func (d fakeDB) GroupName(gid string) (string, error) {
	if n, ok := d.names[gid]; ok {
		return n, nil
	}
	return "", fmt.Errorf("no group %s", gid)
}

func testDB() fakeDB {
	return fakeDB{
		users: []user.User{
			{Username: "alice", Uid: "1002", Gid: "1003", HomeDir: "/home/alice"},
			{Username: "root", Uid: "0", Gid: "0", HomeDir: "/root"},
			{Username: "broken", Uid: "x", Gid: "1", HomeDir: "/"},
			{Username: "4242", Uid: "5000", Gid: "5000", HomeDir: "/home/n"},
		},
		groups: map[string][]string{"alice": {"1003", "1002", "77", "junk"}, "root": {"0"}, "4242": {"5000"}},
		names:  map[string]string{"1003": "alice", "1002": "extra", "0": "root"},
	}
}

func TestPrivileged(t *testing.T) {
	db := testDB()
	c, err := Privileged(db, ViaSudo, 1002, "", "")
	want := Caller{User: "alice", UID: 1002, GID: 1003, Groups: []uint32{1002, 77}, Home: "/home/alice",
		GroupNames: map[uint32]string{1003: "alice", 1002: "extra"}}
	if err != nil || c.User != want.User || c.UID != want.UID || c.GID != want.GID || !slices.Equal(c.Groups, want.Groups) ||
		c.Home != want.Home || !maps.Equal(c.GroupNames, want.GroupNames) {
		t.Fatalf("via sudo for alice: %+v, %v; want %+v", c, err, want)
	}
	if !slices.Equal(c.AllGroups(), []uint32{1003, 1002, 77}) {
		t.Errorf("AllGroups = %v", c.AllGroups())
	}
	// sudo -g: the group sudo ran under becomes the primary, if it is hers.
	if c, err := Privileged(db, ViaSudo, 1002, "1002", ""); err != nil || c.GID != 1002 || !slices.Equal(c.Groups, []uint32{1003, 77}) {
		t.Errorf("via sudo -g extra: %+v, %v", c, err)
	}
	if c, err := Privileged(db, AsRoot, 0, "", "alice"); err != nil || c.UID != 1002 {
		t.Errorf("root naming alice: %+v, %v", c, err)
	}
	if c, err := Privileged(db, AsRoot, 0, "", "1002"); err != nil || c.User != "alice" {
		t.Errorf("root naming alice by uid: %+v, %v", c, err)
	}
	// A name that is all digits is a name first.
	if c, err := Privileged(db, AsRoot, 0, "", "4242"); err != nil || c.UID != 5000 {
		t.Errorf("root naming the user called 4242: %+v, %v", c, err)
	}
	for _, tt := range []struct {
		inv       Invocation
		uid       uint32
		gid, flag string
		want      string
	}{
		{AsRoot, 0, "", "", "containers never run as root"},
		{AsRoot, 0, "", "root", "containers never run as root"},
		{AsRoot, 0, "", "0", "containers never run as root"},
		{AsRoot, 0, "", "nobody-here", "is not in the user database"},
		{AsRoot, 0, "", "broken", "non-numeric uid"},
		{ViaSudo, 1002, "", "alice", "--as-user is for root only"},
		{ViaSudo, 1002, "0", "", "group 0 is not one of user \"alice\"'s groups"},
		{ViaSudo, 4294967290, "", "", "is not in the user database"},
		{AsUser, 1002, "", "", "not privileged"},
	} {
		if _, err := Privileged(db, tt.inv, tt.uid, tt.gid, tt.flag); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Privileged(%v, %d, %q, %q) = %v, want %q", tt.inv, tt.uid, tt.gid, tt.flag, err, tt.want)
		}
	}
}

// TestSystemDB: the node's own database answers for nobody, as NSS has it.
func TestSystemDB(t *testing.T) {
	c, err := Privileged(System, AsRoot, 0, "", "nobody")
	if err != nil || c.User != "nobody" || c.UID == 0 {
		t.Fatalf("root naming nobody: %+v %v", c, err)
	}
}
