// Summarise a cache-tests results JSON the way the suite's own UI classifies
// results (test-engine/lib/results.mjs determineTestResult).
// usage: node harness/summarize.mjs results.json [--list] [--index tests/index.mjs] [--nodeps]
import fs from 'fs'
import path from 'path'
import { determineTestResult, resultTypes } from './test-engine/lib/results.mjs'

const args = process.argv.slice(2)
const file = args[0]
const list = args.includes('--list')
const nodeps = args.includes('--nodeps')
const idxArg = args.indexOf('--index')
const idxPath = idxArg > -1 ? path.resolve(args[idxArg + 1]) : path.resolve('tests/index.mjs')
const suites = (await import(idxPath)).default
const results = JSON.parse(fs.readFileSync(file, 'utf8'))

const names = Object.fromEntries(Object.entries(resultTypes).map(([k, v]) => [v[2], k]))
const counts = {}
const byKind = {}
const rows = []
for (const suite of suites) {
  for (const test of suite.tests) {
    if (test.browser_only) continue
    const kind = test.kind || 'required'
    const r = determineTestResult(suites, test.id, results, !nodeps)
    const cat = names[r[2]]
    counts[cat] = (counts[cat] || 0) + 1
    byKind[kind] = byKind[kind] || {}
    byKind[kind][cat] = (byKind[kind][cat] || 0) + 1
    rows.push({ suite: suite.id, id: test.id, kind, cat, raw: results[test.id], name: test.name })
  }
}
console.log(`results: ${file}   (dependencies ${nodeps ? 'ignored' : 'honoured'})`)
console.log('overall:', JSON.stringify(counts))
for (const [k, v] of Object.entries(byKind)) console.log(`  ${k}:`, JSON.stringify(v))
const passed = (counts.pass || 0) + (counts.yes || 0)
console.log(`pass (pass+yes) = ${passed}; pass (required+optimal only) = ${counts.pass || 0}; fail (required) = ${counts.fail || 0}; optional_fail = ${counts.optional_fail || 0}; no (check) = ${counts.no || 0}; setup_fail = ${counts.setup_fail || 0}; dependency_fail = ${counts.dependency_fail || 0}; retry = ${counts.retry || 0}; untested = ${counts.untested || 0}`)
if (list) {
  for (const row of rows) {
    if (['pass', 'yes'].includes(row.cat)) continue
    console.log(`${row.cat.padEnd(15)} ${row.kind.padEnd(8)} ${row.id}  :: ${JSON.stringify(row.raw)}`)
  }
}
