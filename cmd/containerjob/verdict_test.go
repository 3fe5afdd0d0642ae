package main

import (
	"testing"
)

func TestRlimitValue(t *testing.T) {
	for v, want := range map[uint64]int64{0: 0, 1024: 1024, 1<<62 + 1: -1, ^uint64(0): -1} {
		if got := rlimitValue(v); got != want {
			t.Errorf("rlimitValue(%d) = %d, want %d", v, got, want)
		}
	}
}
