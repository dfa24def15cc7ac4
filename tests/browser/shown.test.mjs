// The dashboard's rule for showing a form's fields (dashboard/dom.js), with the same cases as the
// terminal's (tests/unit/sandbox/authority_test.cpp): every character that hides what runs is
// escaped, long runs of spaces are counted, a long field keeps its start and its end.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { shown, visible } from '../../dashboard/dom.js';

test('every hidden character is shown as an escape', () => {
  const cases = [
    ['\u2066', '\\u2066'], ['\u2067', '\\u2067'], ['\u2068', '\\u2068'], ['\u2069', '\\u2069'],
    ['\u202e', '\\u202e'], ['\u200b', '\\u200b'], ['\u200d', '\\u200d'], ['\u2060', '\\u2060'],
    ['\ufeff', '\\ufeff'], ['\u2028', '\\u2028'], ['\u2029', '\\u2029'],
    ['\u115f', '\\u115f'], ['\u1160', '\\u1160'], ['\u3164', '\\u3164'], ['\uffa0', '\\uffa0'],
    ['\u00a0', '\\u00a0'], ['\u2003', '\\u2003'], ['\u3000', '\\u3000'], ['\u00ad', '\\u00ad'],
    ['\u{e0041}', '\\U000e0041'], ['\ufe0f', '\\ufe0f'], ['\x1b[2J', '\\x1b[2J'], ['\r', '\\r'], ['\x85', '\\u0085'],
  ];
  for (const [raw, escaped] of cases) assert.equal(shown(`rm -rf /tmp/a${raw}b`), `rm -rf /tmp/a${escaped}b`, escaped);
  assert.equal(shown('héllo wörld ✓ 日本'), 'héllo wörld ✓ 日本');
});

test('a long run of spaces is counted and a long field keeps its start and its end', () => {
  assert.equal(shown(`echo hi${' '.repeat(60000)}; rm -rf ~`), 'echo hi[60000 spaces]; rm -rf ~');
  const cut = shown(`echo start ${'x'.repeat(100000)} rm -rf ~`, 2000);
  assert.ok(cut.length < 2100);
  assert.ok(cut.startsWith('echo start'));
  assert.ok(cut.endsWith(' rm -rf ~'));
  assert.match(cut, /characters not shown/);
});

test('a block keeps its lines and indentation and shows its hidden characters', () => {
  assert.equal(visible('{\n          "command": "ls\u2066 -la\u2069"\n}'), '{\n          "command": "ls\\u2066 -la\\u2069"\n}');
});
