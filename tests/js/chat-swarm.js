'use strict'
// The peer of Pear's "connect to many peers by topic with Hyperswarm" guide, with a local
// bootstrap list (HYPERDHT_BOOTSTRAP=host:port,...), host 127.0.0.1 (CHAT_HOST=0.0.0.0 binds
// every interface) and an optional key seed (CHAT_SEED=<64 hex>), so it runs beside
// `hyperdht-chat swarm` on one machine. Usage: node chat-swarm.js [TOPIC_HEX]
// MIT OR Apache-2.0.
const Hyperswarm = require('hyperswarm')
const HyperDHT = require('hyperdht')
const b4a = require('b4a')
const crypto = require('crypto')

const bootstrap = process.env.HYPERDHT_BOOTSTRAP ? process.env.HYPERDHT_BOOTSTRAP.split(',') : undefined
const dht = new HyperDHT({ bootstrap, host: process.env.CHAT_HOST || '127.0.0.1' })
const seed = process.env.CHAT_SEED ? b4a.from(process.env.CHAT_SEED, 'hex') : undefined
const swarm = new Hyperswarm({ dht, seed })
const conns = []

swarm.on('connection', (conn) => {
  const name = b4a.toString(conn.remotePublicKey, 'hex')
  console.log('* got a connection from:', name, '*')
  conns.push(conn)
  conn.once('close', () => conns.splice(conns.indexOf(conn), 1))
  conn.on('data', (data) => console.log(`${name}: ${b4a.toString(data).replace(/\n$/, '')}`))
  conn.on('error', () => {})
})

process.stdin.on('data', (d) => {
  for (const conn of conns) conn.write(d)
})

async function main () {
  const topic = process.argv[2] ? b4a.from(process.argv[2], 'hex') : crypto.randomBytes(32)
  const discovery = swarm.join(topic, { client: true, server: true })
  await discovery.flushed()
  console.log('joined topic:', b4a.toString(topic, 'hex'))
}

async function quit () {
  await swarm.destroy()
  process.exit(0)
}
process.once('SIGTERM', quit)
process.once('SIGINT', quit)
main()
