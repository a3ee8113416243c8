// containerd's own snapshotter test suite (snapshots/testsuite, Debian's
// golang-github-containerd-containerd-dev 1.6) against strata-snapshotter, through
// containerd's gRPC proxy (snapshots/proxy) exactly as a containerd daemon would reach it.
// Each case gets its own strata-snapshotter process on the case's fresh root.
//
// Built in GOPATH mode by snapshotter/tests/go_testsuite.rs; STRATA_SNAPSHOTTER names our
// binary and STRATA_DRIVER the layer driver.
package stratasuite

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/snapshots"
	"github.com/containerd/containerd/snapshots/proxy"
	"github.com/containerd/containerd/snapshots/testsuite"
	"google.golang.org/grpc"
)

func start(ctx context.Context, root string) (snapshots.Snapshotter, func() error, error) {
	bin, driver := os.Getenv("STRATA_SNAPSHOTTER"), os.Getenv("STRATA_DRIVER")
	if bin == "" || driver == "" {
		return nil, nil, fmt.Errorf("STRATA_SNAPSHOTTER and STRATA_DRIVER must be set")
	}
	// Sockets have a 108-byte path limit; the case's root may be deep (TMPDIR on a loop mount).
	sockDir, err := os.MkdirTemp("/tmp", "strata-ss-")
	if err != nil {
		return nil, nil, err
	}
	socket := filepath.Join(sockDir, "s.sock")
	log, err := os.Create(filepath.Join(filepath.Dir(root), "snapshotter.log"))
	if err != nil {
		return nil, nil, err
	}
	cmd := exec.Command(bin, "--driver", driver, "--root", root, "--socket", socket)
	cmd.Stderr = log
	if err := cmd.Start(); err != nil {
		return nil, nil, err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stop := func() error {
		defer os.RemoveAll(sockDir)
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		return log.Close()
	}
	dialer := func(ctx context.Context, addr string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", socket)
	}
	dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	go func() {
		// A snapshotter that exits early fails the dial at once, not after the timeout.
		select {
		case err := <-exited:
			exited <- err
			cancel()
		case <-dctx.Done():
		}
	}()
	conn, err := grpc.DialContext(dctx, "strata", grpc.WithInsecure(), grpc.WithBlock(), grpc.WithContextDialer(dialer))
	if err != nil {
		_ = stop()
		return nil, nil, fmt.Errorf("dialing %s: %w", socket, err)
	}
	sn := proxy.NewSnapshotter(snapshotsapi.NewSnapshotsClient(conn), "strata-"+driver)
	return sn, func() error {
		_ = conn.Close()
		return stop()
	}, nil
}

func TestStrataSnapshotter(t *testing.T) {
	testsuite.SnapshotterSuite(t, "strata-"+os.Getenv("STRATA_DRIVER"), start)
}
