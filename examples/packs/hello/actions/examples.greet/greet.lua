-- examples.greet: returns a greeting for input.who.
function handle(input)
  return {greeting = "hello, " .. tostring(input.who or "world")}
end
