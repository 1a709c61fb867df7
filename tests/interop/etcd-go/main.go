// etcd-go-elector: an elector driven by etcd's own Go client library
// (go.etcd.io/etcd/client/v3/concurrency), the reference for crown's etcd backend. It
// campaigns on one election and prints one JSON line per event on stdout:
//
//	{"event":"campaigning","id":...,"key":...,"lease":...,"t_ns":...}
//	{"event":"elected","key":...,"rev":...,"t_ns":...}
//	{"event":"resigned","t_ns":...}            (after SIGTERM/SIGINT while elected)
//	{"event":"session_lost","t_ns":...}        (the session lease expired; exits 3)
//
// Flags: --endpoints a,b,c --election NAME --id VALUE --ttl SECONDS
//
// With --watch-deletes PREFIX it campaigns not at all: it watches PREFIX and prints
//
//	{"event":"watching","t_ns":...}               (once the watch is established)
//	{"event":"deleted","key":...,"rev":...,"t_ns":...}
//
// The watch does not require a raft leader (etcdctl watch does, and is cancelled by the server
// while the cluster elects a new one), so it survives a raft-leader failure; the benchmarks time
// key deletions with it.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"go.uber.org/zap"
)

func emit(fields map[string]any) {
	fields["t_ns"] = time.Now().UnixNano()
	b, _ := json.Marshal(fields)
	fmt.Println(string(b))
}

func main() {
	endpoints := flag.String("endpoints", "127.0.0.1:2379", "etcd endpoints, comma-separated")
	election := flag.String("election", "crown", "election key (prefix) as etcdctl elect takes it")
	id := flag.String("id", "go", "value to campaign with")
	ttl := flag.Int("ttl", 2, "session TTL in seconds")
	watchDeletes := flag.String("watch-deletes", "", "watch this prefix and print its deletions")
	flag.Parse()

	cli, err := clientv3.New(clientv3.Config{
		Endpoints:            strings.Split(*endpoints, ","),
		DialTimeout:          2 * time.Second,
		DialKeepAliveTime:    500 * time.Millisecond,
		DialKeepAliveTimeout: time.Second,
		Logger:               zap.NewNop(),
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "connect:", err)
		os.Exit(2)
	}
	defer cli.Close()
	if *watchDeletes != "" {
		watch(cli, *watchDeletes)
		return
	}
	s, err := concurrency.NewSession(cli, concurrency.WithTTL(*ttl))
	if err != nil {
		fmt.Fprintln(os.Stderr, "session:", err)
		os.Exit(2)
	}
	e := concurrency.NewElection(s, *election)
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		select {
		case <-sigs:
		case <-s.Done():
		}
		cancel()
	}()
	emit(map[string]any{"event": "campaigning", "id": *id, "lease": fmt.Sprintf("%x", s.Lease())})
	if err := e.Campaign(ctx, *id); err != nil {
		select {
		case <-s.Done():
			emit(map[string]any{"event": "session_lost"})
			os.Exit(3)
		default:
		}
		emit(map[string]any{"event": "stopped", "error": err.Error()})
		s.Close()
		os.Exit(0)
	}
	emit(map[string]any{"event": "elected", "key": e.Key(), "rev": e.Rev()})
	select {
	case <-ctx.Done():
	case <-s.Done():
	}
	select {
	case <-s.Done():
		emit(map[string]any{"event": "session_lost"})
		os.Exit(3)
	default:
	}
	rctx, rcancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer rcancel()
	if err := e.Resign(rctx); err != nil {
		fmt.Fprintln(os.Stderr, "resign:", err)
	}
	s.Close()
	emit(map[string]any{"event": "resigned"})
}

func watch(cli *clientv3.Client, prefix string) {
	// The first response (the created notification) says the watch is registered.
	wc := cli.Watch(context.Background(), prefix, clientv3.WithPrefix(), clientv3.WithCreatedNotify())
	for resp := range wc {
		if resp.Created {
			emit(map[string]any{"event": "watching"})
		}
		if err := resp.Err(); err != nil {
			fmt.Fprintln(os.Stderr, "watch:", err)
			os.Exit(2)
		}
		for _, ev := range resp.Events {
			if ev.Type == clientv3.EventTypeDelete {
				emit(map[string]any{"event": "deleted", "key": string(ev.Kv.Key), "rev": ev.Kv.ModRevision})
			}
		}
	}
}
