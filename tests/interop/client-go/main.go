// clientgo-elector: a participant in a Kubernetes Lease election driven by client-go's own
// leaderelection package (resourcelock.LeaseLock), the reference crown's Lease backend must
// interoperate with. Built by scripts/build-clientgo.sh into ~/.cache/crown/bin/clientgo-elector.
//
// It prints one line per event on stdout, written at once (stdout is not buffered):
//
//	STARTED_LEADING id=<id> transitions=<spec.leaseTransitions read back from the server after acquiring>
//	STOPPED_LEADING id=<id>        (only after a STARTED_LEADING: client-go also calls its callback when it never led)
//	NEW_LEADER id=<id> leader=<identity>   (client-go's OnNewLeader: includes itself)
//
// Diagnostics (client-go's klog) go to stderr. On SIGTERM or SIGINT it cancels its context,
// releasing the Lease first with --release-on-cancel, and exits 0. If it loses the Lease
// without being asked to stop, it prints STOPPED_LEADING and joins the election again.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/klog/v2"
)

var outMu sync.Mutex

// emit writes one event line; os.Stdout is an unbuffered *os.File, so each line is one write.
func emit(format string, args ...any) {
	outMu.Lock()
	defer outMu.Unlock()
	fmt.Fprintf(os.Stdout, format+"\n", args...)
}

// acquireWatch wraps the Lease lock to learn, exactly, whether this elector ever wrote the Lease
// as its holder: client-go calls OnStoppedLeading even when it never led, and starts
// OnStartedLeading in a goroutine, so the callbacks alone cannot order STARTED before STOPPED.
type acquireWatch struct {
	resourcelock.Interface
	id       string
	acquired atomic.Bool
}

func (w *acquireWatch) Create(ctx context.Context, r resourcelock.LeaderElectionRecord) error {
	err := w.Interface.Create(ctx, r)
	if err == nil && r.HolderIdentity == w.id {
		w.acquired.Store(true)
	}
	return err
}

func (w *acquireWatch) Update(ctx context.Context, r resourcelock.LeaderElectionRecord) error {
	err := w.Interface.Update(ctx, r)
	if err == nil && r.HolderIdentity == w.id {
		w.acquired.Store(true)
	}
	return err
}

func main() {
	klog.InitFlags(nil)
	kubeconfig := flag.String("kubeconfig", "", "kubeconfig file (default: $KUBECONFIG, ~/.kube/config, in-cluster)")
	namespace := flag.String("namespace", "default", "namespace of the Lease")
	leaseName := flag.String("lease-name", "crown", "name of the Lease")
	id := flag.String("id", "", "this participant's identity (default: hostname_pid)")
	leaseDuration := flag.Duration("lease-duration", 15*time.Second, "LeaseDuration")
	renewDeadline := flag.Duration("renew-deadline", 10*time.Second, "RenewDeadline")
	retryPeriod := flag.Duration("retry-period", 2*time.Second, "RetryPeriod")
	releaseOnCancel := flag.Bool("release-on-cancel", false, "release the Lease when stopped by a signal")
	flag.Parse()

	if *id == "" {
		host, _ := os.Hostname()
		*id = fmt.Sprintf("%s_%d", host, os.Getpid())
	}

	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = *kubeconfig
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		fmt.Fprintf(os.Stderr, "clientgo-elector: kubeconfig: %v\n", err)
		os.Exit(2)
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		fmt.Fprintf(os.Stderr, "clientgo-elector: client: %v\n", err)
		os.Exit(2)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	for ctx.Err() == nil {
		runOnce(ctx, client, *namespace, *leaseName, *id, *leaseDuration, *renewDeadline, *retryPeriod, *releaseOnCancel)
	}
	os.Exit(0)
}

// runOnce is one client-go election: it returns when ctx is cancelled or the Lease is lost.
func runOnce(ctx context.Context, client kubernetes.Interface, namespace, leaseName, id string,
	leaseDuration, renewDeadline, retryPeriod time.Duration, releaseOnCancel bool) {
	lock := &acquireWatch{
		Interface: &resourcelock.LeaseLock{
			LeaseMeta:  metav1.ObjectMeta{Namespace: namespace, Name: leaseName},
			Client:     client.CoordinationV1(),
			LockConfig: resourcelock.ResourceLockConfig{Identity: id},
		},
		id: id,
	}
	startedPrinted := make(chan struct{})
	elector, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock:            lock,
		LeaseDuration:   leaseDuration,
		RenewDeadline:   renewDeadline,
		RetryPeriod:     retryPeriod,
		ReleaseOnCancel: releaseOnCancel,
		Name:            leaseName,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(leaderCtx context.Context) {
				defer close(startedPrinted)
				// Read the Lease back from the server: leaseTransitions as stored after acquiring.
				transitions := int32(-1)
				getCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				lease, err := client.CoordinationV1().Leases(namespace).Get(getCtx, leaseName, metav1.GetOptions{})
				if err != nil {
					fmt.Fprintf(os.Stderr, "clientgo-elector: reading the Lease back: %v\n", err)
				} else if lease.Spec.LeaseTransitions != nil {
					transitions = *lease.Spec.LeaseTransitions
				} else {
					transitions = 0
				}
				emit("STARTED_LEADING id=%s transitions=%d", id, transitions)
			},
			OnStoppedLeading: func() {
				if lock.acquired.Load() {
					<-startedPrinted
					emit("STOPPED_LEADING id=%s", id)
				}
			},
			OnNewLeader: func(identity string) {
				emit("NEW_LEADER id=%s leader=%s", id, identity)
			},
		},
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "clientgo-elector: %v\n", err)
		os.Exit(2)
	}
	elector.Run(ctx)
}
