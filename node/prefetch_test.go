package node

import (
	"context"
	"errors"
	"testing"

	"github.com/containerjob/containerjob/scheduler"
)

// showJob answers ShowJob with its record, counting the questions.
type showJob struct {
	rec   scheduler.SlurmJob
	err   error
	asked int
}

func (s *showJob) ShowJob(context.Context, string) (scheduler.SlurmJob, error) {
	s.asked++
	return s.rec, s.err
}

// The Prolog's own SLURM_JOB_UID names the owner without asking Slurm;
// without it Slurm's record does, and a word that is no uid is an error,
// never a guess (the prefetch is then not made).
func TestJobOwner(t *testing.T) {
	gone := errors.New("no such job")
	for _, c := range []struct {
		name, owner string
		rec         scheduler.SlurmJob
		err         error
		want        uint32
		wantAsked   int
		wantErr     bool
	}{
		{name: "the Prolog's uid", owner: "1002", rec: scheduler.SlurmJob{UID: 7}, want: 1002},
		{name: "uid 0", owner: "0", rec: scheduler.SlurmJob{UID: 7}, want: 0},
		{name: "no uid: Slurm's record", owner: "", rec: scheduler.SlurmJob{UID: 1003}, want: 1003, wantAsked: 1},
		{name: "Slurm does not know the job", owner: "", err: gone, wantAsked: 1, wantErr: true},
		{name: "a name, not a uid", owner: "cjalice", rec: scheduler.SlurmJob{UID: 7}, wantErr: true},
		{name: "negative", owner: "-1", rec: scheduler.SlurmJob{UID: 7}, wantErr: true},
		{name: "beyond 32 bits", owner: "4294967296", rec: scheduler.SlurmJob{UID: 7}, wantErr: true},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := &showJob{rec: c.rec, err: c.err}
			got, err := jobOwner(context.Background(), s, "42", c.owner)
			if (err != nil) != c.wantErr || (!c.wantErr && got != c.want) {
				t.Errorf("jobOwner(%q) = %d, %v; want %d (error %v)", c.owner, got, err, c.want, c.wantErr)
			}
			if s.asked != c.wantAsked {
				t.Errorf("Slurm was asked %d times, want %d", s.asked, c.wantAsked)
			}
		})
	}
}
