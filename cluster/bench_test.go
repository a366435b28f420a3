package cluster_test

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/flowdhq/flowd/engine"
	"github.com/flowdhq/flowd/persist/etcdlog/etcdtest"
	"github.com/flowdhq/flowd/states"
)

// benchWorkers is how many transitions are in flight at once, as many
// users connecting at once would put them.
const benchWorkers = 64

// BenchmarkTransitions measures durable transitions per second through the
// engine on a three-member etcd cluster on loopback (fsync on), and raw
// etcd transactions of the same shape and size on the same cluster in the
// same run, and logs their ratio (the target is at least 0.5).
//
// A transition is one Append: a Start (created and url_issued, the sealed
// verifier) or a Cancel (failed, the verifier dropped), alternately. The
// raw side writes the same keys with values of the same sizes in the same
// transactions (compare on the head, records, head, live and ended
// indexes, secret) without the engine, encoding or sealing.
func BenchmarkTransitions(b *testing.B) {
	c := etcdtest.Start(b, 3, etcdtest.Options{})
	var engineRate, rawRate float64
	benchEngine := func(b *testing.B) {
		rep := newRigOn(b, c).replica()
		var n atomic.Int64
		b.SetParallelism(max(1, benchWorkers/runtime.GOMAXPROCS(0)))
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				// Each Start supersedes nothing: every worker connects
				// another account.
				i := n.Add(1)
				st, err := rep.Start(context.Background(), engine.StartRequest{Provider: "gh", Transport: states.Gateway, Account: fmt.Sprint("user-", i)})
				if err != nil {
					b.Error(err)
					return
				}
				if !pb.Next() {
					return
				}
				if _, err := rep.Cancel(context.Background(), st.ID); err != nil {
					b.Error(err)
					return
				}
			}
		})
		engineRate = float64(b.N) / b.Elapsed().Seconds()
		b.ReportMetric(engineRate, "transitions/s")
	}
	benchRaw := func(b *testing.B) {
		cli, err := clientv3.New(clientv3.Config{Endpoints: c.Endpoints(), DialTimeout: 5 * time.Second})
		if err != nil {
			b.Fatal(err)
		}
		defer cli.Close()
		prefix := fmt.Sprintf("raw/%d/", time.Now().UnixNano())
		var n atomic.Int64
		// The sizes of the engine's encoded records (created, url_issued,
		// failed) and of a sealed verifier.
		created, issued, failed := strings.Repeat("c", 337), strings.Repeat("u", 184), strings.Repeat("f", 207)
		sealed := strings.Repeat("s", 72)
		b.SetParallelism(max(1, benchWorkers/runtime.GOMAXPROCS(0)))
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			ctx := context.Background()
			for pb.Next() {
				id := fmt.Sprintf("%043d", n.Add(1)) // a state token's length
				h := prefix + "h/" + id
				_, err := cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(h), "=", 0)).Then(
					clientv3.OpPut(prefix+"r/"+id+"/0000000000000001", created),
					clientv3.OpPut(prefix+"r/"+id+"/0000000000000002", issued),
					clientv3.OpPut(h, "2"),
					clientv3.OpPut(prefix+"l/"+id, ""),
					clientv3.OpPut(prefix+"s/verifier/"+id, sealed),
				).Else(clientv3.OpGet(h)).Commit()
				if err != nil {
					b.Error(err)
					return
				}
				if !pb.Next() {
					return
				}
				mark, nkey := prefix+"x/"+id, prefix+"n/800000006a2b4c0000000000/"+id
				_, err = cli.Txn(ctx).If(clientv3.Compare(clientv3.Value(h), "=", "2")).Then(
					clientv3.OpPut(prefix+"r/"+id+"/0000000000000003", failed),
					clientv3.OpPut(h, "3"),
					clientv3.OpDelete(prefix+"l/"+id),
					clientv3.OpTxn([]clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(mark), "=", 0)},
						[]clientv3.Op{clientv3.OpPut(mark, nkey), clientv3.OpPut(nkey, "")}, nil),
					clientv3.OpDelete(prefix+"s/verifier/"+id),
				).Else(clientv3.OpGet(h)).Commit()
				if err != nil {
					b.Error(err)
					return
				}
			}
		})
		rawRate = float64(b.N) / b.Elapsed().Seconds()
		b.ReportMetric(rawRate, "transitions/s")
	}
	// The disk's speed drifts on a shared machine: run the two sides in
	// ABBA order and compare each pair, so a drift moves both.
	var ratios []float64
	for round := range 2 {
		var e, r float64
		if round%2 == 0 {
			b.Run("engine", benchEngine)
			e = engineRate
			b.Run("raw", benchRaw)
			r = rawRate
		} else {
			b.Run("raw", benchRaw)
			r = rawRate
			b.Run("engine", benchEngine)
			e = engineRate
		}
		if e > 0 && r > 0 {
			ratios = append(ratios, e/r)
			b.Logf("round %d: engine %.0f transitions/s, raw etcd %.0f txn/s: ratio %.2f (target >= 0.5)", round, e, r, e/r)
		}
	}
	if len(ratios) > 0 {
		b.Logf("mean ratio engine/raw %.2f over %d rounds", mean(ratios), len(ratios))
	}
}

func mean(xs []float64) float64 {
	sum := 0.0
	for _, x := range xs {
		sum += x
	}
	return sum / float64(len(xs))
}
