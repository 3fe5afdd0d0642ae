package launcher

import (
	"os"
	"testing"
)

// TestMain keeps the unit tests off the node's own files: no installed
// containerjob-init (the tests that need one make their own), no task
// sockets under /run.
func TestMain(m *testing.M) {
	if os.Getenv("LAUNCHER_TEST_TASK_SERVER") == "1" {
		serveTasksForTest() // tasks_test.go
		return
	}
	InitPath = "/nonexistent/containerjob-init"
	dir, err := os.MkdirTemp("", "containerjob-launcher-test-")
	if err != nil {
		panic(err)
	}
	TaskSocketDir = dir + "/tasks"
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}
