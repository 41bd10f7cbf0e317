// Package regionshare splits a key's budget across active-active regions:
// each region enforces its share against its own store, and the shares
// follow the regions' recent traffic for the key, which every serving
// instance publishes as a [Heartbeat] each tick. [RegionBook] turns the
// heartbeats of one tick into the next tick's [ShareTable]. serving wires it
// (serving/regions.go); the arithmetic and its bound live here.
//
// A RegionBook is not safe for concurrent use; a ShareTable is immutable.
package regionshare
