'use strict'
// A hyperswarm 4.17.2 peer the interop tests drive. Options come as JSON in argv[2]:
//   { bootstrap: ['host:port'], seed: hex, topic: hex, server, client, join: bool,
//     maxPeers, firewall: [hex], backoffs: [ms x4], jitter: ms }
// It prints one JSON object per line: {ev:'ready', publicKey}, {ev:'flushed'} (the topic's
// first refresh), {ev:'connection', remote, initiator}, {ev:'data', remote, data},
// {ev:'close', remote}, and the answers to the commands it reads from stdin, one JSON object
// per line: {cmd:'join', server, client}, {cmd:'joinPeer', publicKey}, {cmd:'send', data}, {cmd:'flush'}, {cmd:'leave'},
// {cmd:'stats'}, {cmd:'destroy'}.
// MIT OR Apache-2.0.
const Hyperswarm = require('hyperswarm')
const HyperDHT = require('hyperdht')
const b4a = require('b4a')
const readline = require('readline')

const opts = JSON.parse(process.argv[2] || '{}')
const out = (o) => process.stdout.write(JSON.stringify(o) + '\n')
const hex = (b) => b4a.toString(b, 'hex')

const dht = new HyperDHT({ bootstrap: opts.bootstrap, host: '127.0.0.1' })
const firewalled = new Set(opts.firewall || [])
const swarm = new Hyperswarm({
  dht,
  seed: opts.seed ? b4a.from(opts.seed, 'hex') : undefined,
  maxPeers: opts.maxPeers,
  backoffs: opts.backoffs,
  jitter: opts.jitter,
  firewall: (remotePublicKey) => firewalled.has(hex(remotePublicKey))
})
if (process.env.SWARM_PEER_DEBUG) {
  const connect = dht.connect.bind(dht)
  dht.connect = (pk, o) => {
    const c = connect(pk, o)
    const t = Date.now()
    process.stderr.write(`dial ${hex(pk).slice(0, 8)} relays=${JSON.stringify(o.relayAddresses)}\n`)
    c.on('connect', () => process.stderr.write(`raw connect ${Date.now() - t}ms\n`))
    c.on('open', () => process.stderr.write(`open ${Date.now() - t}ms\n`))
    c.on('error', (e) => process.stderr.write(`error ${e.code} ${e.message}\n`))
    c.on('close', () => process.stderr.write(`close ${Date.now() - t}ms\n`))
    return c
  }
}
const topic = b4a.from(opts.topic, 'hex')
const conns = new Set()

swarm.on('connection', (conn) => {
  const remote = hex(conn.remotePublicKey)
  conns.add(conn)
  out({ ev: 'connection', remote, initiator: conn.isInitiator })
  conn.on('data', (data) => out({ ev: 'data', remote, data: b4a.toString(data) }))
  conn.on('error', () => {})
  conn.on('close', () => {
    conns.delete(conn)
    out({ ev: 'close', remote })
  })
})

async function join (server, client) {
  const discovery = swarm.join(topic, { server, client })
  await discovery.flushed()
  out({ ev: 'flushed' })
}

const commands = {
  join: (c) => join(c.server !== false, c.client !== false),
  joinPeer: (c) => swarm.joinPeer(b4a.from(c.publicKey, 'hex')),
  send: (c) => {
    for (const conn of conns) conn.write(c.data)
    out({ ev: 'sent', to: conns.size })
  },
  flush: async () => {
    await swarm.flush()
    out({ ev: 'flush-done' })
  },
  leave: async () => {
    await swarm.leave(topic)
    out({ ev: 'left' })
  },
  stats: () => {
    out({
      ev: 'stats',
      connections: [...swarm.connections].map((c) => ({ remote: hex(c.remotePublicKey), initiator: c.isInitiator })),
      peers: swarm.peers.size,
      peerKeys: [...swarm.peers.keys()],
      connecting: swarm.connecting,
      attempted: swarm.stats.connects.client.attempted,
      banned: swarm.stats.bannedPeers
    })
  },
  destroy: async () => {
    await swarm.destroy()
    out({ ev: 'destroyed' })
    process.exit(0)
  }
}

readline.createInterface({ input: process.stdin }).on('line', (line) => {
  if (!line.trim()) return
  const c = JSON.parse(line)
  Promise.resolve(commands[c.cmd](c)).catch((err) => out({ ev: 'error', cmd: c.cmd, message: err.message }))
})
process.stdin.on('end', () => commands.destroy())

out({ ev: 'ready', publicKey: hex(swarm.keyPair.publicKey) })
if (opts.join !== false) join(opts.server !== false, opts.client !== false)
