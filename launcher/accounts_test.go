package launcher

import (
	"strings"
	"testing"
)

func TestMergeAccounts(t *testing.T) {
	alice := Account{Name: "alice", UID: 1509, GID: 1600, Home: "/home/alice", LoginShell: "/bin/bash",
		Groups: []Group{{"alice", 1600}, {"gpu", 44}, {"proj", 2000}}}
	img := imageAccounts{
		Passwd: "root:x:0:0:root:/root:/bin/bash\nubuntu:x:1509:1509::/home/ubuntu:/bin/bash\nalice:x:1000:1000::/home/a:/bin/sh\nnobody:x:65534:65534::/:/usr/sbin/nologin",
		Group:  "root:x:0:\nvideo:x:44:\nalice:x:1000:\nproj:x:3000:\nusers:x:100:",
		Shells: []string{"/bin/bash"},
	}
	cases := []struct {
		name           string
		img            imageAccounts
		acct           Account
		wantPw, wantGr string
	}{
		{"replaces same name or id", img, alice,
			"root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534::/:/usr/sbin/nologin\nalice:x:1509:1600::/home/alice:/bin/bash\n",
			"root:x:0:\nusers:x:100:\nalice:x:1600:\ngpu:x:44:alice\nproj:x:2000:alice\n"},
		{"shell missing from the image", imageAccounts{Shells: []string{"/bin/zsh"}}, alice,
			"alice:x:1509:1600::/home/alice:/bin/sh\n",
			"alice:x:1600:\ngpu:x:44:alice\nproj:x:2000:alice\n"},
		{"image without account files", imageAccounts{}, Account{Name: "bob", UID: 7, GID: 8, Home: "/h/bob", Groups: []Group{{"bob", 8}}},
			"bob:x:7:8::/h/bob:/bin/sh\n", "bob:x:8:\n"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			pw, gr := mergeAccounts(c.img, c.acct)
			if pw != c.wantPw {
				t.Errorf("passwd:\n%s\nwant:\n%s", pw, c.wantPw)
			}
			if gr != c.wantGr {
				t.Errorf("group:\n%s\nwant:\n%s", gr, c.wantGr)
			}
		})
	}
}

func TestMergeAccountsHostileImage(t *testing.T) {
	// An image line that names the caller with uid 0 must not survive,
	// and a line without fields is kept as the image had it.
	img := imageAccounts{Passwd: "alice:x:0:0::/root:/bin/sh\ngarbage\n\n", Group: "alice:x:0:alice\n"}
	pw, gr := mergeAccounts(img, Account{Name: "alice", UID: 1509, GID: 1600, Home: "/home/alice", Groups: []Group{{"alice", 1600}}})
	if strings.Contains(pw, ":0:0:") || strings.Count(pw, "alice") != 2 {
		t.Errorf("passwd keeps the image's alice:\n%s", pw)
	}
	if gr != "alice:x:1600:\n" {
		t.Errorf("group = %q", gr)
	}
}

func TestValidAccount(t *testing.T) {
	ok := Account{Name: "alice", Home: "/home/alice", LoginShell: "/bin/bash", Groups: []Group{{"alice", 1}}}
	if err := ValidAccount(ok); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []Account{
		{Name: ""},
		{Name: "a:b"},
		{Name: "alice", Home: "/home/x\nroot::0:0::/:/bin/sh"},
		{Name: "alice", LoginShell: "/bin/sh\r"},
		{Name: "alice", Groups: []Group{{"", 5}}},
		{Name: "alice", Groups: []Group{{"g:x", 5}}},
	} {
		if ValidAccount(bad) == nil {
			t.Errorf("ValidAccount(%+v) = nil, want an error", bad)
		}
	}
}
